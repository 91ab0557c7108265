"""FLUX.2 image editing and generation on Ray Serve.

Where a type lives. What a client sends and receives (the request bodies, the responses, the error object, the
model cards) is the wire's, in ``openai/protocol.py``. What the serving layer resolves a request into (``Route``:
the served model and its ``AdapterStack``) and what crosses a Ray handle between the ingress and the model replicas
(``ImageRequest``, ``ImageResult`` with its ``Timings``, ``ModelInfo``) is internal, in ``types.py``, which imports
neither Ray, torch nor HTTP. What the operator sets (``ServiceConfig``, ``ModelConfig``, ``Limits``) is in
``config.py``, which describes the service, imports no other module of the package and resolves no request. A
request is resolved once, in ``openai/``, from the wire's types into ``types.py``'s; the engine receives resolved
values and never resolves them again. tests/unit/test_architecture.py holds the code to this.

Each request field: parsed in ``openai/protocol.py`` (a JSON body, or the text fields ``openai/multipart.py`` takes
from an edit's form beside its files), resolved in ``openai/``, used where it says:

- ``model``, ``lora``: ``routing.py`` -> ``Route`` (the model, its ``AdapterStack``); ``handles.py`` calls that
  model's deployment, multiplexed by ``AdapterStack.id``; ``engine/adapters.py`` fills its slots with the stack.
- ``size``: ``serving.py`` (``images.parse_size``, or ``auto_size`` of the first image) -> ``width``, ``height``.
- ``image``/``image[]``, ``mask``: ``images.py`` decodes them (the mask to bool, brought to the output size by
  ``mask_at``); ``engine/conditioning.py`` encodes the references, ``engine/masking.py`` blends by the mask.
- ``prompt``, ``n``, ``seed`` (a fresh one when absent), ``num_inference_steps``, ``guidance_scale``,
  ``step_cache``: ``serving.check_params`` holds them to the limits; the engine runs them, and fills an absent
  step count or guidance scale with the loaded model's own default (only the loaded pipeline knows its family).
- ``output_format``, ``output_compression``: ``serving.py`` (``jpeg_quality``, for an engine that encodes JPEG on
  its GPU) and ``images.encode_image``.
- ``stream``, ``partial_images``: the ingress streams from the model's ``generate_stream``, whose previews
  ``engine/progress.py`` decodes, and ``sse.py`` frames the events; ``response_format``, ``background``: refused
  or ignored by ``serving.check_params``.
"""
