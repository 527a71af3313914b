"""Quality gates the seeds ask for: the security audit report (``make security-report``)."""
