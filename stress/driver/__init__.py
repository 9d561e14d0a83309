"""The stages in order, and the only package that imports Ray.

cluster.py: Ray Train, tasks, Tune, RayExecutor; connection.py: starting or joining Ray; resources.py: whether
requests can be granted; fanout.py: resumable fan-out and the in-process executor;
stages.py: the train, evaluate and stress stages; pipeline.py: one seed's run folder, stage
by stage; sweep.py: seeds through Ray Tune and the sweep summary.
"""
