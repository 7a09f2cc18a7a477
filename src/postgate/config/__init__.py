"""Reading the configuration file into frozen objects.

`problems` (the ``FILE: place: reason`` collector) and `values` (typed reads
of TOML values) are leaves every loader uses, the rule compiler included;
`record` reads the ``[record]`` table without importing the recorder; `load`
composes the whole `Config`. Nothing is re-exported here, so importing a leaf
never imports the loader.
"""
