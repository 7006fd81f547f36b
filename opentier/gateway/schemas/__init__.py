"""The JSON shapes of the REST API (pydantic models, so quart-schema validates them and puts them in
``/openapi.json``), each with the conversion from the host's protobuf message it stands for."""
