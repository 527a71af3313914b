"""Regenerates reference.wat from reference.wat.in: resolves $S(name) to (i32.const offset) (i32.const len).

Usage: python -m infrafabric.chassis.modules.build_reference  (run after editing reference.wat.in)
"""
import re
from pathlib import Path

strs = {
 "k_action": '"action":"', "k_path": '"path":"', "k_url": '"url":"', "k_data": '"data":"', "k_prompt": '"prompt":"',
 "k_text": '"text":"', "k_needle": '"needle_x1":"', "k_secret": '"secret":"', "k_target": '"target":"',
 "k_mb": '"mb":', "k_kb": '"kb":', "k_iter": '"iterations":', "k_code": '"code":', "k_respcap": '"resp_cap":',
 "a_noop": "noop", "a_echo": "echo", "a_alloc512": "allocate_512mb", "a_alloc": "allocate", "a_read": "read_file",
 "a_preopen": "preopen_probe", "a_env": "env_probe", "a_http": "http_request", "a_llm": "call_llm",
 "a_loop": "loop_forever", "a_busy": "busy", "a_stdout": "stdout", "a_flood": "stdout_flood", "a_scan": "scan_memory",
 "a_store": "store_secret", "a_readsec": "read_secret", "a_trap": "trap", "a_exit": "exit", "a_recurse": "recurse",
 "a_bad": "bad_result", "a_spoof": "spoof", "a_claim": "claim_oom", "a_log": "log", "a_wc": "wordcount",
 "a_sock": "socket_send", "a_hloop": "http_loop", "k_count": '"count":', "f_calls": ',"calls":', "a_notjson": "not_json",
 "o_ok": '{"status":"success"}', "o_ok_open": '{"status":"success"', "o_err_open": '{"status":"error","error":"',
 "o_close_str": '"}', "o_close": '}', "o_comma_q": '","',
 "f_task": ',"task":', "f_alloc_mb": ',"allocated_mb":', "f_errno": ',"errno":', "f_env": ',"env_count":',
 "f_envb": ',"env_bytes":', "f_argc": ',"argc":', "f_resp": ',"response":', "f_code": ',"code":', "f_acc": ',"acc":',
 "f_written": ',"written":', "f_matches": ',"matches":', "f_scanned": ',"scanned_bytes":', "f_secret": ',"secret":"',
 "f_nonzero": '","nonzero":', "f_spoof": ',"latency_ms":0,"reputation":1.0,"swarm_id":"', "f_words": ',"words":',
 "f_opened": ',"opened":true', "f_tail": ',"tail":"end"',
 "e_no_action": "no_action", "e_unknown": "unknown_action", "e_open": "open_failed", "e_http": "http_failed",
 "e_no_url": "no_url", "e_no_field": "missing_field", "e_sock": "socket_failed",
 "r_m1": '{"method":"POST","url":"', "r_m2": '","body":"', "r_m3": '"}',
 "r_h": '","headers":{"content-type":"text/plain"}}',
 "openai": "https://api.openai.com/v1/chat/completions",
 "notjson": "this is not json",
}
BASE = 256
offsets = {}
pos = BASE
data_lines = []
for name, text in strs.items():
    b = text.encode()
    offsets[name] = (pos, len(b))
    esc = "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else "\\%02x" % ord(c) for c in text)
    data_lines.append(f'  (data (i32.const {pos}) "{esc}") ;; {name}')
    pos += len(b)
assert pos < 2048, pos

HERE = Path(__file__).parent
src = (HERE / 'reference.wat.in').read_text()
def repl(m):
    off, ln = offsets[m.group(1)]
    return f"(i32.const {off}) (i32.const {ln})"
src = re.sub(r"\$S\((\w+)\)", repl, src)
src = src.replace(";;DATA;;", "\n".join(data_lines))
missing = re.findall(r"\$S\(", src)
assert not missing
(HERE / 'reference.wat').write_text(src)
