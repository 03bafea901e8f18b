"""One request's way through: resolve, route, call experts (fan-out, retries), aggregate; may import backends and below."""
