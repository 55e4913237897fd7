"""What users see beyond the terminal: the flow graph of a blueprint and the HTML run report.

This layer sits above :mod:`chanbatch.run` (it reads plans and run records) and below the CLI
and the API. It never imports dask.

- :mod:`chanbatch.view.flow`: a blueprint's inputs, stages and outputs as a :class:`Flow`,
  each stage coloured by its :class:`StageCounts` (reuse, compute, partial); DOT and Mermaid
  text, SVG/PNG through Graphviz (``GraphvizMissing`` without it), a self-contained HTML page.
  ``plan_flow(report)`` colours it by what the next run would do.
"""
