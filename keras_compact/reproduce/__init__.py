"""Every paper table from one command: `python -m tools.reproduce`.

`tables` defines the papers' tables (rows = recipes + overrides, with the
papers' numbers), `runner` trains the rows resumably, `report` aggregates
the seeds into Markdown and JSON, `plots` draws the Pareto plots.
"""

from keras_compact.reproduce import report
from keras_compact.reproduce import runner
from keras_compact.reproduce import tables
from keras_compact.reproduce.runner import Options
