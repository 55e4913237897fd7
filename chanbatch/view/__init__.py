"""What users see beyond the terminal: the flow graph of a blueprint and the HTML run report.

This layer sits above :mod:`chanbatch.run` (it reads plans and run records) and below the CLI
and the API. It never imports dask.
"""
