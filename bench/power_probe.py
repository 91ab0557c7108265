"""Does the GPU run matmuls slower when they come back to back? (compiled FLUX.2 steps ran the same cuBLAS
kernels ~5% slower than eager steps, where unfused pointwise kernels sit between the matmuls.)

One FLUX.2-dev-sized GEMM (a single-stream block's fused projection: 4608 tokens x 6144 -> 55296) timed
alone with CUDA events in three regimes: a short burst after idling, sustained back to back, and
interleaved with memory-bound work (as in an eager step); plus the 8192³ ceiling as a burst and
sustained. NVML samples the SM clock and board power during each regime.

    python -m bench.power_probe --json $OUT/power_probe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from bench.common import NvmlSampler, timed_calls


class ClockSampler(NvmlSampler):
    """SM clock (MHz) and board power (W)."""

    def read(self, nvml: Any, handle: Any) -> tuple[int, float]:
        return nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM), nvml.nvmlDeviceGetPowerUsage(handle) / 1e3

    def result(self) -> dict[str, Any]:
        if not self.samples:
            return {"error": self.error or "no samples"}
        return {
            "sm_mhz_p50": statistics.median(s[0] for s in self.samples),
            "power_w_p50": round(statistics.median(s[1] for s in self.samples), 1),
            "samples": len(self.samples),
        }


def regimes(m: int, k: int, n: int, sustained: int) -> dict[str, dict]:
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16).t()  # weights as nn.Linear stores them
    flop = 2 * m * k * n
    scratch = torch.randn(256 * 2**20, device="cuda", dtype=torch.bfloat16)  # 512 MB: ~0.25 ms a pass

    def gemm() -> None:
        torch.mm(a, b)

    def memory_bound() -> None:  # about half a GEMM's time of pointwise work, as in an eager step
        for _ in range(4):
            scratch.mul_(1.0001)

    def rate(times: list[float]) -> dict[str, float]:
        ms = statistics.median(times)
        return {"gemm_ms_p50": round(ms, 4), "tflops": round(flop / ms / 1e9, 1), "n": len(times)}

    timed_calls(gemm, 5)
    out: dict[str, dict] = {"shape": {"m": m, "k": k, "n": n, "tflop": round(flop / 1e12, 3)}}
    time.sleep(0.5)
    out["burst_after_idle"] = rate(timed_calls(gemm, 3))
    with ClockSampler(period_s=0.005) as clocks:
        out["sustained"] = rate(timed_calls(gemm, sustained)[sustained // 2 :])
    out["sustained"].update(clocks.result())
    time.sleep(0.5)
    with ClockSampler(period_s=0.005) as clocks:
        out["interleaved"] = rate(timed_calls(gemm, sustained // 2, between=memory_bound)[sustained // 4 :])
    out["interleaved"].update(clocks.result())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sustained", type=int, default=300, help="GEMMs in the sustained run (last half timed)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    result = {
        "gpu": torch.cuda.get_device_name(),
        "dev_single_block_proj": regimes(4608, 6144, 55296, args.sustained),
        "square_8192": regimes(8192, 8192, 8192, args.sustained),
    }
    print(json.dumps(result, indent=1), flush=True)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
