"""What a request means, shared by the Gateway and the JobRunner: plan a call against the
model's limits, render the prompt, prepare input images, call the model, store results.

No web framework and no Ray here: `serve_app/api/` speaks HTTP, `serve_app/ray_adapter.py`
turns deployment handles into the backends these classes take.
"""
