;; The two passes of decode-resample.ts's separable triangle filter, in WebAssembly (SIMD for
;; the vertical pass): the JS loops cost ~3.5 ms per 500x375 image on the project machine,
;; more than decoding it. Same tables (decode-resample.ts `axisTable`: fixed tap count, 22-bit
;; fixed-point weights >= 0 that sum to about 2^22, so every sum rounds into 0..255 and needs
;; no clamping), same rounding, 8-bit intermediate.
;;
;; Order: vertical first, on interleaved RGB rows (contiguous: 8 bytes at a time with SIMD),
;; then horizontal on the (fewer) output rows, which also transposes HWC → CHW.
;;
;; Regenerate decode-resample-wasm.generated.ts after editing: node libs/stream-io/scripts/build-wasm.mjs
(module
  (memory (export "memory") 16)

  ;; rows of `stride` bytes (stride >= 8) at $src → $outH rows at $dst:
  ;; dst row j = sum over k < $taps of weights[j * taps + k] * src row (starts[j] + k)
  (func (export "vertical")
    (param $src i32) (param $stride i32) (param $outH i32) (param $taps i32)
    (param $starts i32) (param $weights i32) (param $dst i32)
    (local $j i32) (local $e i32) (local $k i32) (local $row i32) (local $w i32)
    (local $lo v128) (local $hi v128) (local $px v128) (local $wv v128) (local $half v128)
    (local $out i32)
    (local.set $half (i32x4.splat (i32.const 2097152)))
    (loop $rows
      (local.set $row (i32.add (local.get $src)
        (i32.mul (i32.load (i32.add (local.get $starts) (i32.shl (local.get $j) (i32.const 2)))) (local.get $stride))))
      (local.set $w (i32.add (local.get $weights) (i32.shl (i32.mul (local.get $j) (local.get $taps)) (i32.const 2))))
      (local.set $out (i32.add (local.get $dst) (i32.mul (local.get $j) (local.get $stride))))
      (local.set $e (i32.const 0))
      (loop $bytes
        ;; the last block of a row overlaps the one before (same values written twice)
        (if (i32.gt_s (i32.add (local.get $e) (i32.const 8)) (local.get $stride))
          (then (local.set $e (i32.sub (local.get $stride) (i32.const 8)))))
        (local.set $lo (local.get $half))
        (local.set $hi (local.get $half))
        (local.set $k (i32.const 0))
        (loop $taps
          (local.set $px (v128.load64_zero (i32.add (i32.add (local.get $row) (i32.mul (local.get $k) (local.get $stride))) (local.get $e))))
          (local.set $px (i16x8.extend_low_i8x16_u (local.get $px)))
          (local.set $wv (i32x4.splat (i32.load (i32.add (local.get $w) (i32.shl (local.get $k) (i32.const 2))))))
          (local.set $lo (i32x4.add (local.get $lo) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $px)) (local.get $wv))))
          (local.set $hi (i32x4.add (local.get $hi) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $px)) (local.get $wv))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $taps (i32.lt_u (local.get $k) (local.get $taps))))
        (local.set $px (i16x8.narrow_i32x4_u (i32x4.shr_s (local.get $lo) (i32.const 22)) (i32x4.shr_s (local.get $hi) (i32.const 22))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $e)) (i8x16.narrow_i16x8_u (local.get $px) (local.get $px)))
        (local.set $e (i32.add (local.get $e) (i32.const 8)))
        (br_if $bytes (i32.lt_s (local.get $e) (local.get $stride))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $rows (i32.lt_u (local.get $j) (local.get $outH)))))

  ;; $rows rows of interleaved RGB at $src ($stride bytes apart) → three planes at $dst
  ;; ($rows x $outW each): pixel i of a row = sum over k < $taps of weights[i * taps + k] *
  ;; source pixel (starts[i] + k), per channel
  (func (export "horizontal")
    (param $src i32) (param $stride i32) (param $rows i32) (param $outW i32) (param $taps i32)
    (param $starts i32) (param $weights i32) (param $dst i32)
    (local $j i32) (local $i i32) (local $k i32) (local $p i32) (local $q i32) (local $wk i32)
    (local $r i32) (local $g i32) (local $b i32) (local $plane i32) (local $o i32)
    (local.set $plane (i32.mul (local.get $rows) (local.get $outW)))
    (loop $rowsLoop
      (local.set $o (i32.add (local.get $dst) (i32.mul (local.get $j) (local.get $outW))))
      (local.set $i (i32.const 0))
      (local.set $q (local.get $weights))
      (loop $pixels
        (local.set $p (i32.add
          (i32.add (local.get $src) (i32.mul (local.get $j) (local.get $stride)))
          (i32.mul (i32.load (i32.add (local.get $starts) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 3))))
        (local.set $r (i32.const 2097152))
        (local.set $g (i32.const 2097152))
        (local.set $b (i32.const 2097152))
        (local.set $k (i32.const 0))
        (loop $taps
          (local.set $wk (i32.load (local.get $q)))
          (local.set $r (i32.add (local.get $r) (i32.mul (local.get $wk) (i32.load8_u (local.get $p)))))
          (local.set $g (i32.add (local.get $g) (i32.mul (local.get $wk) (i32.load8_u offset=1 (local.get $p)))))
          (local.set $b (i32.add (local.get $b) (i32.mul (local.get $wk) (i32.load8_u offset=2 (local.get $p)))))
          (local.set $p (i32.add (local.get $p) (i32.const 3)))
          (local.set $q (i32.add (local.get $q) (i32.const 4)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $taps (i32.lt_u (local.get $k) (local.get $taps))))
        (i32.store8 (i32.add (local.get $o) (local.get $i)) (i32.shr_s (local.get $r) (i32.const 22)))
        (i32.store8 (i32.add (i32.add (local.get $o) (local.get $plane)) (local.get $i)) (i32.shr_s (local.get $g) (i32.const 22)))
        (i32.store8 (i32.add (i32.add (local.get $o) (i32.shl (local.get $plane) (i32.const 1))) (local.get $i)) (i32.shr_s (local.get $b) (i32.const 22)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $pixels (i32.lt_u (local.get $i) (local.get $outW))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $rowsLoop (i32.lt_u (local.get $j) (local.get $rows)))))
)
