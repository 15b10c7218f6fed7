# The Python loader (numpy): installed into pythondir when configure found
# a python3 (AM_PATH_PYTHON), always distributed; tests/pyload.sh tests it.
# The installed copy is python/install/hvqconv.py, the module with
# _PLUGINDIR set to $(plugindir), where it finds the ecsq plugin whose C
# decoder it calls (the source tree's copy looks in the build tree).
if HAVE_PYTHON
nodist_python_PYTHON = python/install/hvqconv.py
python/install/hvqconv.py: $(srcdir)/python/hvqconv.py Makefile
	$(AM_V_GEN)$(MKDIR_P) python/install && \
	sed 's|^_PLUGINDIR = None$$|_PLUGINDIR = "$(plugindir)"|' $(srcdir)/python/hvqconv.py >$@.tmp && \
	grep -q '^_PLUGINDIR = "' $@.tmp && mv $@.tmp $@
all-local: python/install/hvqconv.py
CLEANFILES += python/install/hvqconv.py python/install/hvqconv.py.tmp
endif
EXTRA_DIST += python/hvqconv.py
