"""The report: tables, figures, headline sentences and one self-contained HTML page.

Everything here but ``inputs`` and ``build`` takes frames and arrays (the tidy metrics of the
``evaluate`` stages, maps, images) and returns frames, figures, strings or bytes; ``inputs`` reads the
study's files and ``build`` assembles the report and writes ``reports/`` (``stages/report.py`` calls it).

- :mod:`~kmx_eval.report.inputs`   the report's settings and the study's files it reads
- :mod:`~kmx_eval.report.build`    the numbers, the page and the swap of every output into ``reports/``
- :mod:`~kmx_eval.report.numbers`  the one number format (significant digits, intervals, missing values)
- :mod:`~kmx_eval.report.stats`    statistics across seeds: aggregation, paired comparisons, controls, ranking
- :mod:`~kmx_eval.report.table`    the Table model and its renderings (CSV, Markdown, LaTeX)
- :mod:`~kmx_eval.report.tables`   the report's tables: their contents, order and captions
- :mod:`~kmx_eval.report.figures`  trade-off figure, prototype fidelity, pixel-flipping curves; byte-stable rendering
- :mod:`~kmx_eval.report.galleries` explanation and prototype galleries
- :mod:`~kmx_eval.report.summary`  headline sentences and the key numbers of ``reports/metrics.json``
- :mod:`~kmx_eval.report.html`     the jinja2 page with embedded figures and sortable tables
"""
