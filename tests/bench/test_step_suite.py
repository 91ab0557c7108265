"""The step profiler's plumbing on the tiny transformer (its timings mean nothing on a CPU) and its kernel classes
(names taken from an H200 profile)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.suites.step import kernel_class


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_TNN", "matmul"),
        ("triton_tem_fused_mm_t_view_2", "matmul"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1", "attention"),
        ("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention__to_copy", "inductor_fused"),
        ("triton_poi_fused__unsafe_view_cat_mul_permute_silu_slice_split_with_sizes_view_2", "inductor_fused"),
        ("void at::native::vectorized_layer_norm_kernel<c10::BFloat16, float, true>", "other"),
    ],
)
def test_kernel_classes(name: str, expected: str) -> None:
    assert kernel_class(name) == expected


def test_step_profile_times_both_shapes_per_variant(bench: Callable, tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    bench("step", "--source", "tiny", "--size", "64", "--repeats", "2", "--variant", "compile=none", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["shapes"]) == {"t2i", "edit1"}
    edit, t2i = result["shapes"]["edit1"], result["shapes"]["t2i"]
    assert edit["attention_tflop"] > t2i["attention_tflop"] > 0  # the reference's tokens join attention
    (row,) = result["rows"]
    assert row["variant"] == "compile=none" and row["compile"] == "none"
    assert all(row[key] > 0 for key in ("t2i_static_ms", "t2i_ms", "edit1_ms"))
    assert row["profile_t2i"] == {"skipped": "no device kernels (CPU run)"}
