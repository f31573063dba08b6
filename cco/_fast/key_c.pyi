from cco._fast.key_py import JsonSyntaxError as JsonSyntaxError

EXCLUDED: frozenset[bytes]

class RequestScan:
    """Top-level members of a JSON object body, as byte spans of the original body."""

    body: bytes
    def value(self, name: bytes) -> bytes | None:
        """Raw JSON of a top-level member, or None when absent."""
    def names(self) -> list[bytes]: ...
    def key(self, context: bytes) -> bytes:
        """16-byte xxh3-128 digest of context + the members (minus stream and metadata) sorted by name."""

def scan_request(body: bytes) -> RequestScan:
    """Validates `body` as a JSON object in one pass; raises JsonSyntaxError with the byte position."""

def scan_variants() -> tuple[str, ...]:
    """How the plain-body path finds string ends: "map" (default), "map-sse2" (CPUs with AVX, BMI1, BMI2) and "skip"."""

def use_scan_variant(name: str) -> None:
    """Selects one of scan_variants() (tests and benchmarks)."""

def plain_member_count(body: bytes) -> int:
    """The plain-body path's member count for `body`, or -1 when it leaves the body to the general loop."""

def plain_key(body: bytes, context: bytes) -> bytes | None:
    """The key as the compiled hit lane computes it, or None when the body is not plain."""

def string_map_accepts(body: bytes) -> bool:
    """Whether the string-end map takes `body` (no control byte, valid escapes, valid UTF-8)."""

def utf8_variants() -> tuple[str, ...]:
    """How the UTF-8 check can run on this CPU: "ssse3" (default where present) and "sse2" ("scalar" without SSE2)."""

def use_utf8_variant(name: str) -> None:
    """Selects one of utf8_variants() (tests and benchmarks)."""

def xxh3_kinds() -> tuple[str, ...]:
    """How the key's xxh3-128 accumulates on this CPU: "avx" (default where present), "sse2", "portable"."""

def use_xxh3_kind(name: str) -> None:
    """Selects one of xxh3_kinds() (tests and benchmarks)."""

def xxh3_128_of_pieces(pieces: list[bytes]) -> bytes:
    """xxh3-128 of the joined pieces, fed to the key's hasher one piece at a time (tests)."""
