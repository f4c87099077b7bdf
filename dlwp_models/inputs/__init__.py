"""What goes into a model and what comes out: images (:mod:`.images`), the threaded decode
pipeline (:mod:`.pipeline`), each family's preprocessing (:mod:`.transforms`) and prediction
records (:mod:`.predictions`)."""
