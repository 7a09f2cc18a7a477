"""Recording answered requests as a replayable request file.

`recorder` is the daemon's side, `writer` the child process that owns the
file, `blocks` the block format and redaction. Nothing is re-exported here,
so that importing one module (the writer child, say) imports no other.
"""
