"""seqkd's built-in method plugins, one folder each, loaded through the ``seqkd`` entry-point group."""
