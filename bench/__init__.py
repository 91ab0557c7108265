"""Benchmarks and the evaluation harness: ``python -m bench --help`` lists the suites (docs/benchmarks.md).

Layout:

    __main__.py  python -m bench SUITE: the table of suites, each name -> its module in suites/
    suites/      one module per suite, named as on the command line (cp-latency: cp_latency.py); eval, of several
                 modules, a package. A suite imports bench.lib and its own package, never another suite.
    lib/         what the suites share, one module per purpose; it imports no suite, nor torch at import time:
                 cli.py              each suite's parser, ModelConfig overrides, WxH+R shapes
                 device.py           GPU or CPU, sync, free and peak memory, NVML utilisation
                 timing.py           the device's clock (CUDA events), back-to-back calls, p50/p95 summaries
                 pipeline_timing.py  per transformer step and per stage inside real pipeline calls; a timed series
                 floors.py           matmul rates measured in-process, a step's FLOPs, the floors they give
                 requests.py         made-up requests and reference images, plain diffusers' call of a request
                 deviation.py        how far an output moved: tensors, uint8 images, PSNR
                 results.py          the JSON written as figures arrive, log lines, the wall-clock budget
    lab/         the lent GPU machine's scripts (batch.sh: the figures of docs/benchmarks.md) and configs
    multi_gpu/   the Serve config of a context-parallel replica for a host with 3 GPUs (docs/multi_gpu.md)

tests/bench/test_layout.py checks the import rules.
"""
