;; The two passes of decode-resample.ts's separable triangle filter, in WebAssembly (SIMD for
;; the vertical pass): the JS loops cost ~3.5 ms per 500x375 image on the project machine,
;; more than decoding it. Same tables (decode-resample.ts `axisTable`: fixed tap count, 14-bit
;; fixed-point weights >= 0 that sum to about 2^14, so every sum rounds into 0..255 and needs
;; no clamping), same rounding, 8-bit intermediate.
;;
;; Order: vertical first, on interleaved RGB rows (contiguous: 16 bytes at a time with SIMD),
;; then horizontal on the (fewer) output rows, which also transposes HWC → CHW: two taps of
;; a pixel's three channels per SIMD dot product.
;;
;; Regenerate decode-resample-wasm.generated.ts after editing: node libs/stream-io/scripts/build-wasm.mjs
(module
  (memory (export "memory") 16)

  ;; rows of `stride` bytes (stride >= 16) at $src → $outH rows at $dst:
  ;; dst row j = sum over k < 2 x $pairs of weight k of row j x src row (starts[j] + k).
  ;; Two taps at a time: the same 16 bytes of rows k and k + 1 interleaved ([a0 b0 a1 b1 ..],
  ;; widened to 16 bits) and one i32x4.dot_i16x8_s with [wk wk+1 wk wk+1 ..] give 4 outputs'
  ;; partial sums, 16 bytes per 4 dot products. The pair's two 16-bit weights are one i32 at
  ;; weights + (j * pairs + m) * 4, so i32x4.splat lays them out. An odd tap count has a zero
  ;; weight last: its row (one past the taps, still inside this memory) is read and ignored.
  (func (export "vertical")
    (param $src i32) (param $stride i32) (param $outH i32) (param $pairs i32)
    (param $starts i32) (param $weights i32) (param $dst i32)
    (local $j i32) (local $e i32) (local $m i32) (local $row i32) (local $w i32) (local $p i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $lo v128) (local $hi v128) (local $wv v128) (local $half v128) (local $twoRows i32)
    (local $out i32)
    (local.set $half (i32x4.splat (i32.const 8192)))
    (local.set $twoRows (i32.shl (local.get $stride) (i32.const 1)))
    (loop $rows
      (local.set $row (i32.add (local.get $src)
        (i32.mul (i32.load (i32.add (local.get $starts) (i32.shl (local.get $j) (i32.const 2)))) (local.get $stride))))
      (local.set $w (i32.add (local.get $weights) (i32.shl (i32.mul (local.get $j) (local.get $pairs)) (i32.const 2))))
      (local.set $out (i32.add (local.get $dst) (i32.mul (local.get $j) (local.get $stride))))
      (local.set $e (i32.const 0))
      (loop $bytes
        ;; the last block of a row overlaps the one before (same values written twice)
        (if (i32.gt_s (i32.add (local.get $e) (i32.const 16)) (local.get $stride))
          (then (local.set $e (i32.sub (local.get $stride) (i32.const 16)))))
        (local.set $a0 (local.get $half))
        (local.set $a1 (local.get $half))
        (local.set $a2 (local.get $half))
        (local.set $a3 (local.get $half))
        (local.set $p (i32.add (local.get $row) (local.get $e)))
        (local.set $m (i32.const 0))
        (loop $taps
          (local.set $wv (i32x4.splat (i32.load (i32.add (local.get $w) (i32.shl (local.get $m) (i32.const 2))))))
          (local.set $lo (i8x16.shuffle 0 16 1 17 2 18 3 19 4 20 5 21 6 22 7 23
            (v128.load (local.get $p)) (v128.load (i32.add (local.get $p) (local.get $stride)))))
          (local.set $hi (i8x16.shuffle 8 24 9 25 10 26 11 27 12 28 13 29 14 30 15 31
            (v128.load (local.get $p)) (v128.load (i32.add (local.get $p) (local.get $stride)))))
          (local.set $a0 (i32x4.add (local.get $a0) (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_u (local.get $lo)) (local.get $wv))))
          (local.set $a1 (i32x4.add (local.get $a1) (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_u (local.get $lo)) (local.get $wv))))
          (local.set $a2 (i32x4.add (local.get $a2) (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_u (local.get $hi)) (local.get $wv))))
          (local.set $a3 (i32x4.add (local.get $a3) (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_u (local.get $hi)) (local.get $wv))))
          (local.set $p (i32.add (local.get $p) (local.get $twoRows)))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br_if $taps (i32.lt_u (local.get $m) (local.get $pairs))))
        (v128.store (i32.add (local.get $out) (local.get $e))
          (i8x16.narrow_i16x8_u
            (i16x8.narrow_i32x4_u (i32x4.shr_s (local.get $a0) (i32.const 14)) (i32x4.shr_s (local.get $a1) (i32.const 14)))
            (i16x8.narrow_i32x4_u (i32x4.shr_s (local.get $a2) (i32.const 14)) (i32x4.shr_s (local.get $a3) (i32.const 14)))))
        (local.set $e (i32.add (local.get $e) (i32.const 16)))
        (br_if $bytes (i32.lt_s (local.get $e) (local.get $stride))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br_if $rows (i32.lt_u (local.get $j) (local.get $outH)))))

;; $rows rows of interleaved RGB at $src ($stride bytes apart) → three planes at $dst
  ;; ($rows x $outW each). Pixel i of a row = sum over tap pairs m < $pairs of the two source
  ;; pixels (starts[i] + 2m, + 2m + 1), per channel, weighted by the i16x8 at
  ;; weights + (i * pairs + m) * 16: [w0 w1 w0 w1 w0 w1 0 0]. One i8x16.swizzle (a single
  ;; pshufb; a two-input shuffle with a zero vector measured 8% slower overall) spreads the two
  ;; pixels' bytes into [r0 r1 g0 g1 b0 b1 . .], widened to 16 bits, and one i32x4.dot_i16x8_s
  ;; weighs them, giving [r g b 0] (lanes 6-7 and, for an odd tap count, the last pixel's bytes
  ;; meet zero weights and are ignored).
  (func (export "horizontal")
    (param $src i32) (param $stride i32) (param $rows i32) (param $outW i32) (param $pairs i32)
    (param $starts i32) (param $weights i32) (param $dst i32)
    (local $j i32) (local $i i32) (local $m i32) (local $p i32) (local $q i32)
    (local $acc v128) (local $spread v128) (local $half v128) (local $plane i32) (local $o i32) (local $row i32)
    (local.set $plane (i32.mul (local.get $rows) (local.get $outW)))
    (local.set $half (i32x4.splat (i32.const 8192)))
    (local.set $spread (v128.const i8x16 0 3 1 4 2 5 0 0 0 0 0 0 0 0 0 0))
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
              (i16x8.extend_low_i8x16_u (i8x16.swizzle (v128.load64_zero (local.get $p)) (local.get $spread)))
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
