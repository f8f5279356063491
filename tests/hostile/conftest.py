import os
import sys

# The small models built in code live beside the runtime tests.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "runtime"))
