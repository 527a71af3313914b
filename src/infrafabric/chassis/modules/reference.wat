;; IF.chassis reference guest module (see docs/GUEST_ABI.md).
;;
;; ABI: exports memory, alloc(size) -> ptr (0 = out of memory), execute_task(ptr, len) -> i64
;; packed (result_ptr << 32 | result_len). The task is compact UTF-8 JSON; the result is a JSON
;; object. Actions exercise every host function and every sandbox boundary, so the tests, the
;; benchmarks and the demo attack the real sandbox from inside a real guest.
;;
;; Memory map: 0..255 scratch (iovecs, wasi out-params, digits), 256..2047 string table,
;; 2048..2303 secret area (store_secret/read_secret), heap from 65536 (bump allocator).
;; Generated from reference.wat.in by build_reference.py (string table offsets resolved): edit
;; the .in file and regenerate.
(module
  (import "env" "log" (func $log (param i32 i32 i32)))
  (import "env" "http_request" (func $http (param i32 i32 i32 i32) (result i32)))
  (import "env" "alloc_failed" (func $alloc_failed (param i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 2)

  (global $heap (mut i32) (i32.const 65536))
  (global $out (mut i32) (i32.const 0))
  (global $outp (mut i32) (i32.const 0))
  (global $outend (mut i32) (i32.const 0))
  (global $tptr (mut i32) (i32.const 0))
  (global $tlen (mut i32) (i32.const 0))
  (global $fptr (mut i32) (i32.const 0))
  (global $flen (mut i32) (i32.const 0))
  (global $secret_len (mut i32) (i32.const 0))

  (data (i32.const 256) "\22action\22:\22") ;; k_action
  (data (i32.const 266) "\22path\22:\22") ;; k_path
  (data (i32.const 274) "\22url\22:\22") ;; k_url
  (data (i32.const 281) "\22data\22:\22") ;; k_data
  (data (i32.const 289) "\22prompt\22:\22") ;; k_prompt
  (data (i32.const 299) "\22text\22:\22") ;; k_text
  (data (i32.const 307) "\22needle_x1\22:\22") ;; k_needle
  (data (i32.const 320) "\22secret\22:\22") ;; k_secret
  (data (i32.const 330) "\22target\22:\22") ;; k_target
  (data (i32.const 340) "\22mb\22:") ;; k_mb
  (data (i32.const 345) "\22kb\22:") ;; k_kb
  (data (i32.const 350) "\22iterations\22:") ;; k_iter
  (data (i32.const 363) "\22code\22:") ;; k_code
  (data (i32.const 370) "\22resp_cap\22:") ;; k_respcap
  (data (i32.const 381) "noop") ;; a_noop
  (data (i32.const 385) "echo") ;; a_echo
  (data (i32.const 389) "allocate_512mb") ;; a_alloc512
  (data (i32.const 403) "allocate") ;; a_alloc
  (data (i32.const 411) "read_file") ;; a_read
  (data (i32.const 420) "preopen_probe") ;; a_preopen
  (data (i32.const 433) "env_probe") ;; a_env
  (data (i32.const 442) "http_request") ;; a_http
  (data (i32.const 454) "call_llm") ;; a_llm
  (data (i32.const 462) "loop_forever") ;; a_loop
  (data (i32.const 474) "busy") ;; a_busy
  (data (i32.const 478) "stdout") ;; a_stdout
  (data (i32.const 484) "stdout_flood") ;; a_flood
  (data (i32.const 496) "scan_memory") ;; a_scan
  (data (i32.const 507) "store_secret") ;; a_store
  (data (i32.const 519) "read_secret") ;; a_readsec
  (data (i32.const 530) "trap") ;; a_trap
  (data (i32.const 534) "exit") ;; a_exit
  (data (i32.const 538) "recurse") ;; a_recurse
  (data (i32.const 545) "bad_result") ;; a_bad
  (data (i32.const 555) "spoof") ;; a_spoof
  (data (i32.const 560) "claim_oom") ;; a_claim
  (data (i32.const 569) "log") ;; a_log
  (data (i32.const 572) "wordcount") ;; a_wc
  (data (i32.const 581) "socket_send") ;; a_sock
  (data (i32.const 592) "http_loop") ;; a_hloop
  (data (i32.const 601) "\22count\22:") ;; k_count
  (data (i32.const 609) ",\22calls\22:") ;; f_calls
  (data (i32.const 618) "not_json") ;; a_notjson
  (data (i32.const 626) "{\22status\22:\22success\22}") ;; o_ok
  (data (i32.const 646) "{\22status\22:\22success\22") ;; o_ok_open
  (data (i32.const 665) "{\22status\22:\22error\22,\22error\22:\22") ;; o_err_open
  (data (i32.const 692) "\22}") ;; o_close_str
  (data (i32.const 694) "}") ;; o_close
  (data (i32.const 695) "\22,\22") ;; o_comma_q
  (data (i32.const 698) ",\22task\22:") ;; f_task
  (data (i32.const 706) ",\22allocated_mb\22:") ;; f_alloc_mb
  (data (i32.const 722) ",\22errno\22:") ;; f_errno
  (data (i32.const 731) ",\22env_count\22:") ;; f_env
  (data (i32.const 744) ",\22env_bytes\22:") ;; f_envb
  (data (i32.const 757) ",\22argc\22:") ;; f_argc
  (data (i32.const 765) ",\22response\22:") ;; f_resp
  (data (i32.const 777) ",\22code\22:") ;; f_code
  (data (i32.const 785) ",\22acc\22:") ;; f_acc
  (data (i32.const 792) ",\22written\22:") ;; f_written
  (data (i32.const 803) ",\22matches\22:") ;; f_matches
  (data (i32.const 814) ",\22scanned_bytes\22:") ;; f_scanned
  (data (i32.const 831) ",\22secret\22:\22") ;; f_secret
  (data (i32.const 842) "\22,\22nonzero\22:") ;; f_nonzero
  (data (i32.const 854) ",\22latency_ms\22:0,\22reputation\22:1.0,\22swarm_id\22:\22") ;; f_spoof
  (data (i32.const 899) ",\22words\22:") ;; f_words
  (data (i32.const 908) ",\22opened\22:true") ;; f_opened
  (data (i32.const 922) ",\22tail\22:\22end\22") ;; f_tail
  (data (i32.const 935) "no_action") ;; e_no_action
  (data (i32.const 944) "unknown_action") ;; e_unknown
  (data (i32.const 958) "open_failed") ;; e_open
  (data (i32.const 969) "http_failed") ;; e_http
  (data (i32.const 980) "no_url") ;; e_no_url
  (data (i32.const 986) "missing_field") ;; e_no_field
  (data (i32.const 999) "socket_failed") ;; e_sock
  (data (i32.const 1012) "{\22method\22:\22POST\22,\22url\22:\22") ;; r_m1
  (data (i32.const 1036) "\22,\22body\22:\22") ;; r_m2
  (data (i32.const 1046) "\22}") ;; r_m3
  (data (i32.const 1048) "\22,\22headers\22:{\22content-type\22:\22text/plain\22}}") ;; r_h
  (data (i32.const 1090) "https://api.openai.com/v1/chat/completions") ;; openai
  (data (i32.const 1132) "this is not json") ;; notjson

  ;; ---------------------------------------------------------------- memory
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i64) (local $need i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $n))))
    (if (i64.gt_u (local.get $end) (i64.const 0xFFFF0000)) (then (return (i32.const 0))))
    (if (i64.gt_u (local.get $end) (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
      (then
        (local.set $need
          (i32.sub
            (i32.wrap_i64 (i64.shr_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 16)))
            (memory.size)))
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (local.get $p))

  ;; Allocate or report the refused allocation to the host (which ends the task with MemoryError).
  (func $must_alloc (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (call $alloc (local.get $n)))
    (if (i32.eqz (local.get $p))
      (then (call $alloc_failed (i64.extend_i32_u (local.get $n))) (unreachable)))
    (local.get $p))

  (func $grow_mb (param $mb i32) (result i32)
    (if (i32.eq (memory.grow (i32.mul (local.get $mb) (i32.const 16))) (i32.const -1))
      (then
        (call $alloc_failed (i64.mul (i64.extend_i32_u (local.get $mb)) (i64.const 1048576)))
        (return (i32.const 0))))
    (i32.const 1))

  ;; ---------------------------------------------------------------- output
  (func $out_init (param $cap i32)
    (global.set $out (call $must_alloc (local.get $cap)))
    (global.set $outp (global.get $out))
    (global.set $outend (i32.add (global.get $out) (local.get $cap))))

  (func $emit (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $outp) (local.get $n)) (global.get $outend))
      (then (local.set $n (i32.sub (global.get $outend) (global.get $outp)))))
    (memory.copy (global.get $outp) (local.get $p) (local.get $n))
    (global.set $outp (i32.add (global.get $outp) (local.get $n))))

  (func $emit_u32 (param $v i32)
    (local $i i32)
    (local.set $i (i32.const 32))
    (loop $digits
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $v) (i32.const 0))))
    (call $emit (local.get $i) (i32.sub (i32.const 32) (local.get $i))))

  (func $emit_i32 (param $v i32)
    (if (i32.lt_s (local.get $v) (i32.const 0))
      (then
        (i32.store8 (i32.const 40) (i32.const 45))
        (call $emit (i32.const 40) (i32.const 1))
        (local.set $v (i32.sub (i32.const 0) (local.get $v)))))
    (call $emit_u32 (local.get $v)))

  (func $result (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (global.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (global.get $outp) (global.get $out)))))

  (func $ok (result i64)
    (call $out_init (i32.const 64))
    (call $emit (i32.const 626) (i32.const 20))
    (call $result))

  (func $fail (param $p i32) (param $n i32) (result i64)
    (call $out_init (i32.const 128))
    (call $emit (i32.const 665) (i32.const 27))
    (call $emit (local.get $p) (local.get $n))
    (call $emit (i32.const 692) (i32.const 2))
    (call $result))

  ;; ---------------------------------------------------------------- task parsing
  (func $memeq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (local $i i32)
    (block $no
      (loop $l
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                           (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))

  (func $find (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $last i32)
    (if (i32.gt_u (local.get $nl) (local.get $hl)) (then (return (i32.const -1))))
    (local.set $last (i32.sub (local.get $hl) (local.get $nl)))
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (local.get $i) (local.get $last)))
        (if (call $memeq (i32.add (local.get $h) (local.get $i)) (local.get $n) (local.get $nl))
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const -1))

  (func $eq (param $p i32) (param $l i32) (param $q i32) (param $m i32) (result i32)
    (if (i32.ne (local.get $l) (local.get $m)) (then (return (i32.const 0))))
    (call $memeq (local.get $p) (local.get $q) (local.get $m)))

  ;; Finds "key":"value" in the task; sets $fptr/$flen to the raw (still JSON-escaped) value.
  (func $str_field (param $kp i32) (param $kl i32) (result i32)
    (local $i i32) (local $k i32) (local $end i32) (local $start i32)
    (local.set $i (call $find (global.get $tptr) (global.get $tlen) (local.get $kp) (local.get $kl)))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $start (i32.add (i32.add (global.get $tptr) (local.get $i)) (local.get $kl)))
    (local.set $end (i32.add (global.get $tptr) (global.get $tlen)))
    (local.set $k (local.get $start))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $k) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $k)) (i32.const 34))
          (then
            (br_if $done (i32.eq (local.get $k) (local.get $start)))
            (br_if $done (i32.ne (i32.load8_u (i32.sub (local.get $k) (i32.const 1))) (i32.const 92)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $l)))
    (global.set $fptr (local.get $start))
    (global.set $flen (i32.sub (local.get $k) (local.get $start)))
    (i32.const 1))

  ;; Finds "key":<digits>; returns the number or -1.
  (func $int_field (param $kp i32) (param $kl i32) (result i32)
    (local $i i32) (local $k i32) (local $end i32) (local $v i32) (local $c i32) (local $any i32)
    (local.set $i (call $find (global.get $tptr) (global.get $tlen) (local.get $kp) (local.get $kl)))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $k (i32.add (i32.add (global.get $tptr) (local.get $i)) (local.get $kl)))
    (local.set $end (i32.add (global.get $tptr) (global.get $tlen)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $k) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $k)))
        (br_if $done (i32.lt_u (local.get $c) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 57)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (i32.sub (local.get $c) (i32.const 48))))
        (local.set $any (i32.const 1))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $l)))
    (if (i32.eqz (local.get $any)) (then (return (i32.const -1))))
    (local.get $v))

  ;; ---------------------------------------------------------------- actions
  (func $act_echo (result i64)
    (call $out_init (i32.add (global.get $tlen) (i32.const 64)))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 698) (i32.const 8))
    (call $emit (global.get $tptr) (global.get $tlen))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_allocate (param $mb i32) (result i64)
    (if (i32.lt_s (local.get $mb) (i32.const 0)) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (drop (call $grow_mb (local.get $mb)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 706) (i32.const 16))
    (call $emit_u32 (local.get $mb))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_read_file (result i64)
    (local $e i32)
    (if (i32.eqz (call $str_field (i32.const 266) (i32.const 8))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    ;; path_open(dirfd=3, LOOKUP_SYMLINK_FOLLOW, path, len, oflags=0, rights=FD_READ, 0, 0, &fd)
    (local.set $e (call $path_open (i32.const 3) (i32.const 1) (global.get $fptr) (global.get $flen)
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 48)))
    (call $out_init (i32.const 128))
    (if (i32.eqz (local.get $e))
      (then
        (call $emit (i32.const 646) (i32.const 19))
        (call $emit (i32.const 908) (i32.const 14))
        (call $emit (i32.const 694) (i32.const 1))
        (return (call $result))))
    (call $emit (i32.const 665) (i32.const 27))
    (call $emit (i32.const 958) (i32.const 11))
    (i32.store8 (i32.const 40) (i32.const 34))
    (call $emit (i32.const 40) (i32.const 1))
    (call $emit (i32.const 722) (i32.const 9))
    (call $emit_u32 (local.get $e))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_preopen (result i64)
    (local $e i32)
    (local.set $e (call $fd_prestat_get (i32.const 3) (i32.const 48)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 722) (i32.const 9))
    (call $emit_u32 (local.get $e))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_env (result i64)
    (drop (call $environ_sizes_get (i32.const 48) (i32.const 52)))
    (drop (call $args_sizes_get (i32.const 56) (i32.const 60)))
    (call $out_init (i32.const 128))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 731) (i32.const 13))
    (call $emit_u32 (i32.load (i32.const 48)))
    (call $emit (i32.const 744) (i32.const 13))
    (call $emit_u32 (i32.load (i32.const 52)))
    (call $emit (i32.const 757) (i32.const 8))
    (call $emit_u32 (i32.load (i32.const 56)))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  ;; Sends {"method":"POST","url":..,"body":..[,"headers":..]} through the host; emits the result.
  (func $do_http (param $up i32) (param $ul i32) (param $bp i32) (param $bl i32) (param $hdr i32) (result i64)
    (local $req i32) (local $reqlen i32) (local $cap i32) (local $resp i32) (local $n i32)
    (call $out_init (i32.add (i32.add (local.get $ul) (local.get $bl)) (i32.const 128)))
    (call $emit (i32.const 1012) (i32.const 24))
    (call $emit (local.get $up) (local.get $ul))
    (call $emit (i32.const 1036) (i32.const 10))
    (call $emit (local.get $bp) (local.get $bl))
    (if (local.get $hdr) (then (call $emit (i32.const 1048) (i32.const 42))) (else (call $emit (i32.const 1046) (i32.const 2))))
    (local.set $req (global.get $out))
    (local.set $reqlen (i32.sub (global.get $outp) (global.get $out)))
    (local.set $cap (call $int_field (i32.const 370) (i32.const 11)))
    (if (i32.le_s (local.get $cap) (i32.const 0)) (then (local.set $cap (i32.const 262144))))
    (local.set $resp (call $must_alloc (local.get $cap)))
    (local.set $n (call $http (local.get $req) (local.get $reqlen) (local.get $resp) (local.get $cap)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then
        (call $out_init (i32.const 128))
        (call $emit (i32.const 665) (i32.const 27))
        (call $emit (i32.const 969) (i32.const 11))
        (i32.store8 (i32.const 40) (i32.const 34))
        (call $emit (i32.const 40) (i32.const 1))
        (call $emit (i32.const 777) (i32.const 8))
        (call $emit_i32 (local.get $n))
        (call $emit (i32.const 694) (i32.const 1))
        (return (call $result))))
    (call $out_init (i32.add (local.get $n) (i32.const 64)))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 765) (i32.const 12))
    (call $emit (local.get $resp) (local.get $n))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_http (result i64)
    (local $up i32) (local $ul i32) (local $bp i32) (local $bl i32)
    (if (i32.eqz (call $str_field (i32.const 274) (i32.const 7))) (then (return (call $fail (i32.const 980) (i32.const 6)))))
    (local.set $up (global.get $fptr)) (local.set $ul (global.get $flen))
    (if (call $str_field (i32.const 281) (i32.const 8))
      (then (local.set $bp (global.get $fptr)) (local.set $bl (global.get $flen))))
    (call $do_http (local.get $up) (local.get $ul) (local.get $bp) (local.get $bl) (i32.const 0)))

  (func $act_llm (result i64)
    (local $up i32) (local $ul i32) (local $bp i32) (local $bl i32)
    (if (call $str_field (i32.const 274) (i32.const 7))
      (then (local.set $up (global.get $fptr)) (local.set $ul (global.get $flen)))
      (else
        (call $set_field (i32.const 1090) (i32.const 42))
        (local.set $up (global.get $fptr)) (local.set $ul (global.get $flen))))
    (if (call $str_field (i32.const 289) (i32.const 10))
      (then (local.set $bp (global.get $fptr)) (local.set $bl (global.get $flen))))
    (call $do_http (local.get $up) (local.get $ul) (local.get $bp) (local.get $bl) (i32.const 1)))

  (func $set_field (param $p i32) (param $l i32)
    (global.set $fptr (local.get $p)) (global.set $flen (local.get $l)))

  (func $act_busy (param $n i32) (result i64)
    (local $i i32) (local $acc i32)
    (local.set $acc (i32.const 7))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 785) (i32.const 7))
    (call $emit_u32 (i32.and (local.get $acc) (i32.const 0x7fffffff)))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $write_fd (param $fd i32) (param $p i32) (param $n i32) (result i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.load (i32.const 8)))

  (func $act_stdout (result i64)
    (local $w i32)
    (if (i32.eqz (call $str_field (i32.const 299) (i32.const 8))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $w (call $write_fd (i32.const 1) (global.get $fptr) (global.get $flen)))
    (drop (call $write_fd (i32.const 2) (global.get $fptr) (global.get $flen)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 792) (i32.const 11))
    (call $emit_u32 (local.get $w))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_flood (result i64)
    (local $kb i32) (local $buf i32) (local $i i32) (local $total i32)
    (local.set $kb (call $int_field (i32.const 345) (i32.const 5)))
    (if (i32.lt_s (local.get $kb) (i32.const 0)) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $buf (call $must_alloc (i32.const 1024)))
    (memory.fill (local.get $buf) (i32.const 65) (i32.const 1024))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $kb)))
        (local.set $total (i32.add (local.get $total) (call $write_fd (i32.const 1) (local.get $buf) (i32.const 1024))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 792) (i32.const 11))
    (call $emit_u32 (local.get $total))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  ;; Counts occurrences of a needle given XOR-1 encoded, so the plain needle never sits in memory.
  (func $act_scan (result i64)
    (local $np i32) (local $nl i32) (local $size i32) (local $i i32) (local $j i32) (local $count i32)
    (local $last i32)
    (if (call $str_field (i32.const 274) (i32.const 7))
      (then (drop (call $do_http (global.get $fptr) (global.get $flen) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (if (i32.eqz (call $str_field (i32.const 307) (i32.const 13))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $np (global.get $fptr)) (local.set $nl (global.get $flen))
    (if (i32.eqz (local.get $nl)) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $size (i32.shl (memory.size) (i32.const 16)))
    (local.set $last (i32.sub (local.get $size) (local.get $nl)))
    (block $done
      (loop $outer
        (br_if $done (i32.gt_u (local.get $i) (local.get $last)))
        (local.set $j (i32.const 0))
        (block $miss
          (loop $inner
            (if (i32.ge_u (local.get $j) (local.get $nl))
              (then (local.set $count (i32.add (local.get $count) (i32.const 1))) (br $miss)))
            (br_if $miss
              (i32.ne (i32.load8_u (i32.add (local.get $i) (local.get $j)))
                      (i32.xor (i32.load8_u (i32.add (local.get $np) (local.get $j))) (i32.const 1))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (call $out_init (i32.const 128))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 803) (i32.const 11))
    (call $emit_u32 (local.get $count))
    (call $emit (i32.const 814) (i32.const 17))
    (call $emit_u32 (local.get $size))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_store_secret (result i64)
    (local $n i32)
    (if (i32.eqz (call $str_field (i32.const 320) (i32.const 10))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $n (global.get $flen))
    (if (i32.gt_u (local.get $n) (i32.const 256)) (then (local.set $n (i32.const 256))))
    (memory.copy (i32.const 2048) (global.get $fptr) (local.get $n))
    (global.set $secret_len (local.get $n))
    (call $ok))

  (func $act_read_secret (result i64)
    (local $i i32) (local $nz i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const 256)))
        (if (i32.load8_u (i32.add (i32.const 2048) (local.get $i)))
          (then (local.set $nz (i32.add (local.get $nz) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $out_init (i32.const 512))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 831) (i32.const 11))
    (call $emit (i32.const 2048) (global.get $secret_len))
    (call $emit (i32.const 842) (i32.const 12))
    (call $emit_u32 (local.get $nz))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))

  (func $act_spoof (result i64)
    (local $tp i32) (local $tl i32)
    (drop (call $act_busy (call $int_field (i32.const 350) (i32.const 13))))
    (if (call $str_field (i32.const 330) (i32.const 10))
      (then (local.set $tp (global.get $fptr)) (local.set $tl (global.get $flen))))
    (call $out_init (i32.add (local.get $tl) (i32.const 128)))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 854) (i32.const 45))
    (call $emit (local.get $tp) (local.get $tl))
    (call $emit (i32.const 692) (i32.const 2))
    (call $result))

  (func $act_log (result i64)
    (if (i32.eqz (call $str_field (i32.const 299) (i32.const 8))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (call $log (i32.const 1) (global.get $fptr) (global.get $flen))
    (call $ok))

  (func $act_wordcount (result i64)
    (local $i i32) (local $end i32) (local $c i32) (local $in i32) (local $words i32)
    (if (i32.eqz (call $str_field (i32.const 299) (i32.const 8))) (then (return (call $fail (i32.const 986) (i32.const 13)))))
    (local.set $i (global.get $fptr))
    (local.set $end (i32.add (global.get $fptr) (global.get $flen)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $i)))
        (if (i32.le_u (local.get $c) (i32.const 32))
          (then (local.set $in (i32.const 0)))
          (else
            (if (i32.eqz (local.get $in))
              (then (local.set $words (i32.add (local.get $words) (i32.const 1)))))
            (local.set $in (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 899) (i32.const 9))
    (call $emit_u32 (local.get $words))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  ;; The bug-3 guest: calls the same endpoint again and again (the host paces it).
  (func $act_http_loop (result i64)
    (local $n i32) (local $i i32) (local $ok i32) (local $req i32) (local $reqlen i32) (local $resp i32)
    (if (i32.eqz (call $str_field (i32.const 274) (i32.const 7))) (then (return (call $fail (i32.const 980) (i32.const 6)))))
    (local.set $n (call $int_field (i32.const 601) (i32.const 8)))
    (call $out_init (i32.add (global.get $flen) (i32.const 128)))
    (call $emit (i32.const 1012) (i32.const 24))
    (call $emit (global.get $fptr) (global.get $flen))
    (call $emit (i32.const 1036) (i32.const 10))
    (call $emit (i32.const 1046) (i32.const 2))
    (local.set $req (global.get $out))
    (local.set $reqlen (i32.sub (global.get $outp) (global.get $out)))
    (local.set $resp (call $must_alloc (i32.const 65536)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.ge_s (call $http (local.get $req) (local.get $reqlen) (local.get $resp) (i32.const 65536)) (i32.const 0))
          (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $out_init (i32.const 96))
    (call $emit (i32.const 646) (i32.const 19))
    (call $emit (i32.const 609) (i32.const 9))
    (call $emit_u32 (local.get $ok))
    (call $emit (i32.const 694) (i32.const 1))
    (call $result))

  (func $act_socket (result i64)
    (local $e i32)
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 8))
    (local.set $e (call $sock_send (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 8)))
    (call $fail (i32.const 999) (i32.const 13)))

  (func $act_not_json (result i64)
    (call $out_init (i32.const 64))
    (call $emit (i32.const 1132) (i32.const 16))
    (call $result))

  ;; ---------------------------------------------------------------- entry point
  (func (export "execute_task") (param $p i32) (param $l i32) (result i64)
    (local $ap i32) (local $al i32)
    (global.set $tptr (local.get $p))
    (global.set $tlen (local.get $l))
    (if (i32.eqz (call $str_field (i32.const 256) (i32.const 10))) (then (return (call $fail (i32.const 935) (i32.const 9)))))
    (local.set $ap (global.get $fptr))
    (local.set $al (global.get $flen))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 381) (i32.const 4)) (then (return (call $ok))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 385) (i32.const 4)) (then (return (call $act_echo))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 389) (i32.const 14))
      (then (return (call $act_allocate (i32.const 512)))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 403) (i32.const 8))
      (then (return (call $act_allocate (call $int_field (i32.const 340) (i32.const 5))))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 411) (i32.const 9)) (then (return (call $act_read_file))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 420) (i32.const 13)) (then (return (call $act_preopen))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 433) (i32.const 9)) (then (return (call $act_env))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 442) (i32.const 12)) (then (return (call $act_http))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 454) (i32.const 8)) (then (return (call $act_llm))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 462) (i32.const 12))
      (then (loop $forever (br $forever)) (unreachable)))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 474) (i32.const 4))
      (then (return (call $act_busy (call $int_field (i32.const 350) (i32.const 13))))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 478) (i32.const 6)) (then (return (call $act_stdout))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 484) (i32.const 12)) (then (return (call $act_flood))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 496) (i32.const 11)) (then (return (call $act_scan))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 507) (i32.const 12)) (then (return (call $act_store_secret))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 519) (i32.const 11)) (then (return (call $act_read_secret))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 530) (i32.const 4)) (then (unreachable)))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 534) (i32.const 4))
      (then (call $proc_exit (call $int_field (i32.const 363) (i32.const 7))) (unreachable)))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 538) (i32.const 7))
      (then (drop (call $recurse (i32.const 0))) (unreachable)))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 545) (i32.const 10))
      (then (return (i64.const 0xFFFFFFF000000010))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 555) (i32.const 5)) (then (return (call $act_spoof))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 560) (i32.const 9))
      (then (call $alloc_failed (i64.const 1)) (return (call $ok))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 569) (i32.const 3)) (then (return (call $act_log))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 572) (i32.const 9)) (then (return (call $act_wordcount))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 581) (i32.const 11)) (then (return (call $act_socket))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 592) (i32.const 9)) (then (return (call $act_http_loop))))
    (if (call $eq (local.get $ap) (local.get $al) (i32.const 618) (i32.const 8)) (then (return (call $act_not_json))))
    (call $fail (i32.const 944) (i32.const 14)))
)
