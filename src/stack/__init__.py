"""The platform as running services: a topology file, a supervisor that starts the real engines and every
service as its own OS process, restarts what dies, and a Prometheus that scrapes them all.

``ifstack up`` / ``ifstack down`` (``make up`` / ``make down``); see docs/OPERATIONS.md.
"""
