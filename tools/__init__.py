"""In a clone, `tools` is also keras_compact.tools (the shipped tools).

`python -m tools.profile` keeps working from a clone; the installed package
has the shipped tools as keras_compact.tools and `keras-compact-<tool>`
console scripts. What is not shipped (install.sh, developer tools) lives
here as files.
"""

import os

__path__.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "keras_compact", "tools"))
