"""The HTTP layer: FastAPI app, content negotiation, and translation of core answers into HTTP."""
