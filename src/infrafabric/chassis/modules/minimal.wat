;; Smallest guest that satisfies the IF.chassis ABI (docs/GUEST_ABI.md): no imports at all.
;; alloc() is a bump allocator; execute_task() ignores the task and answers {"status":"success"}.
;; Used by the benchmarks to measure the chassis' own overhead beside raw wasmtime.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"status\":\"success\"}")
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $need i32)
    (local.set $p (global.get $heap))
    (if (i64.gt_u (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $n)))
                  (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
      (then
        (local.set $need (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1)))
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func (export "execute_task") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 20)))
)
