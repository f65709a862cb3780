;; The two passes of decode-resample.ts's separable triangle filter, in WebAssembly (SIMD for
;; the vertical pass): the JS loops cost ~3.5 ms per 500x375 image on the project machine,
;; more than decoding it. Same tables (decode-resample.ts `axisTable`: fixed tap count, 14-bit
;; fixed-point weights >= 0 that sum to about 2^14, so every sum rounds into 0..255 and needs
;; no clamping), same rounding, 8-bit intermediate.
;;
;; Order: vertical first, on interleaved RGB rows (contiguous: 8 bytes at a time with SIMD),
;; then horizontal on the (fewer) output rows, which also transposes HWC → CHW: two taps of
;; a pixel's three channels per SIMD dot product.
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
    (local.set $half (i32x4.splat (i32.const 8192)))
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
        (local.set $px (i16x8.narrow_i32x4_u (i32x4.shr_s (local.get $lo) (i32.const 14)) (i32x4.shr_s (local.get $hi) (i32.const 14))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $e)) (i8x16.narrow_i16x8_u (local.get $px) (local.get $px)))
        (local.set $e (i32.add (local.get $e) (i32.const 8)))
        (br_if $bytes (i32.lt_s (local.get $e) (local.get $stride))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $rows (i32.lt_u (local.get $j) (local.get $outH)))))

;; $rows rows of interleaved RGB at $src ($stride bytes apart) → three planes at $dst
  ;; ($rows x $outW each). Pixel i of a row = sum over tap pairs m < $pairs of the two source
  ;; pixels (starts[i] + 2m, + 2m + 1), per channel, weighted by the i16x8 at
  ;; weights + (i * pairs + m) * 16: [w0 w1 w0 w1 w0 w1 0 0]. One i8x16.shuffle spreads the two
  ;; pixels' bytes into [r0 r1 g0 g1 b0 b1 0 0] (16-bit), one i32x4.dot_i16x8_s weighs them,
  ;; giving [r g b 0] (an odd tap count has a zero weight last; the byte it reads is ignored).
  (func (export "horizontal")
    (param $src i32) (param $stride i32) (param $rows i32) (param $outW i32) (param $pairs i32)
    (param $starts i32) (param $weights i32) (param $dst i32)
    (local $j i32) (local $i i32) (local $m i32) (local $p i32) (local $q i32)
    (local $acc v128) (local $zero v128) (local $half v128) (local $plane i32) (local $o i32) (local $row i32)
    (local.set $plane (i32.mul (local.get $rows) (local.get $outW)))
    (local.set $half (i32x4.splat (i32.const 8192)))
    (loop $rowsLoop
      (local.set $o (i32.add (local.get $dst) (i32.mul (local.get $j) (local.get $outW))))
      (local.set $row (i32.add (local.get $src) (i32.mul (local.get $j) (local.get $stride))))
      (local.set $i (i32.const 0))
      (local.set $q (local.get $weights))
      (loop $pixels
        (local.set $p (i32.add (local.get $row)
          (i32.mul (i32.load (i32.add (local.get $starts) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 3))))
        (local.set $acc (local.get $half))
        (local.set $m (i32.const 0))
        (loop $taps
          (local.set $acc (i32x4.add (local.get $acc)
            (i32x4.dot_i16x8_s
              (i8x16.shuffle 0 16 3 16 1 16 4 16 2 16 5 16 16 16 16 16 (v128.load64_zero (local.get $p)) (local.get $zero))
              (v128.load (local.get $q)))))
          (local.set $p (i32.add (local.get $p) (i32.const 6)))
          (local.set $q (i32.add (local.get $q) (i32.const 16)))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br_if $taps (i32.lt_u (local.get $m) (local.get $pairs))))
        (local.set $acc (i32x4.shr_s (local.get $acc) (i32.const 14)))
        (i32.store8 (i32.add (local.get $o) (local.get $i)) (i32x4.extract_lane 0 (local.get $acc)))
        (i32.store8 (i32.add (i32.add (local.get $o) (local.get $plane)) (local.get $i)) (i32x4.extract_lane 1 (local.get $acc)))
        (i32.store8 (i32.add (i32.add (local.get $o) (i32.shl (local.get $plane) (i32.const 1))) (local.get $i)) (i32x4.extract_lane 2 (local.get $acc)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $pixels (i32.lt_u (local.get $i) (local.get $outW))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $rowsLoop (i32.lt_u (local.get $j) (local.get $rows)))))
)
