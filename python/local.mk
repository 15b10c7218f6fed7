# The Python loader (numpy): installed into pythondir when configure found
# a python3 (AM_PATH_PYTHON), always distributed; tests/pyload.sh tests it.
if HAVE_PYTHON
python_PYTHON = python/hvqconv.py
endif
EXTRA_DIST += python/hvqconv.py
