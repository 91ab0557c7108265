"""Probe (python bench/text_encoder_probe.py random-klein-4b random-dev): the klein-4B and dev text encoders, untrimmed vs trimmed, eager vs compiled, in one process."""
import json, os, statistics, sys
import torch
from deployments.engine.synthetic.random_weights import build_random_pipeline
from deployments.engine.text_encoder import trim_text_encoder
from deployments.engine.optimize import compile_decoder_layers, configure_compile_cache
configure_compile_cache("/tmp/ccte")
PROMPT = "a photo of a red car in front of a house at sunset"
out = {}
def time_encode(p, n=15):
    for _ in range(3):
        p.encode_prompt(PROMPT, device="cuda", max_sequence_length=512)
    torch.cuda.synchronize()
    ms = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); p.encode_prompt(PROMPT, device="cuda", max_sequence_length=512); e.record()
        torch.cuda.synchronize(); ms.append(s.elapsed_time(e))
    return round(statistics.median(ms), 2)
for source in sys.argv[1:]:
    with torch.inference_mode():
        full = build_random_pipeline(source, components=("text_encoder",))
        cut = build_random_pipeline(source, components=("text_encoder",))
        trim_text_encoder(cut)
        r = {"eager_full_ms": time_encode(full), "eager_trimmed_ms": time_encode(cut)}
        a = full.encode_prompt(PROMPT, device="cuda", max_sequence_length=512)[0]
        b = cut.encode_prompt(PROMPT, device="cuda", max_sequence_length=512)[0]
        r["bit_equal"] = bool(torch.equal(a, b))
        r["max_abs_diff"] = float((a.float() - b.float()).abs().max())
        for name, p in (("full", full), ("trimmed", cut)):
            compile_decoder_layers(p.text_encoder, {"fullgraph": False})
        r["compiled_full_ms"] = time_encode(full)
        r["compiled_trimmed_ms"] = time_encode(cut)
    out[source] = r
    print(source, json.dumps(r), flush=True)
    del full, cut
    torch.cuda.empty_cache()
    torch._dynamo.reset()
json.dump(out, open(os.environ["OUT"] + "/probe-text-encoder.json", "w"), indent=1)
