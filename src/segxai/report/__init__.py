"""HTML report and figures. The demo report is built from sections: each module of
:mod:`segxai.report.sections` contributes one (see that package's docstring)."""

from segxai.report.html import Section, figure_to_html, table_html, write_report

__all__ = ["Section", "figure_to_html", "table_html", "write_report"]
