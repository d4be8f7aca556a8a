"""edgeline-flash: build, provision and deploy the edgeline firmware (``python -m tools.flash``)."""
