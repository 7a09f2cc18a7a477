"""The wire: Postfix's policy delegation protocol and the request files made of it.

`codec` frames bytes into requests and encodes replies (sans-IO, after h11);
`policy_files` reads and writes the same ``name=value`` blocks as files with
expectations. Imports nothing else from postgate and nothing from Twisted.
"""
