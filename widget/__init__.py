"""Sources and build of the embeddable script (`python -m widget.build`)."""
