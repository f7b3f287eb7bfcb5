"""Demo-report sections, discovered automatically.

Each module here defines::

    ORDER: int                      # position in the report (smaller first)
    TITLE: str
    def build(ctx: DemoContext) -> Section

``segxai demo`` imports every module of this package, calls ``build`` in ``ORDER`` and writes
the report; a section that raises is reported as failed in the page (and the command exits
non-zero) instead of losing the other sections.
"""
