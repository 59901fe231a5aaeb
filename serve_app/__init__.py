"""Image generation, editing and understanding served over HTTP.

Plain Python: everything here imports and runs without Ray, except
`serve_app.graph`, which wires the Ray Serve application.
"""
