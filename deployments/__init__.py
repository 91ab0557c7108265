"""FLUX.2 image editing and generation on Ray Serve.

Where a type lives. What a client sends and receives (the request bodies, the responses, the error object) is
the wire's, in ``openai/protocol.py``; what crosses a Ray handle between the ingress and the model replicas
(``ImageRequest``, ``ImageResult`` with its ``Timings``, ``ModelInfo``) is internal, in ``types.py``, which
imports neither Ray, torch nor HTTP; what the operator sets (``ServiceConfig``, ``ModelConfig``, ``Limits``) is
in ``config.py``, which describes the service and resolves no request. A request is resolved once, in
``openai/serving.py``, from the wire's types into ``types.py``'s; the engine receives resolved values and never
resolves them again. The README's Layout section says which module holds which job.
"""
