"""The technique catalog as data: ranking-model techniques, their priors and citations.

``techniques.yaml`` lists what a ranking engineer would try on a DLRM-style model, each as
a small program of changes relative to the baseline; ``activities.agents.knowledge`` loads,
validates and instantiates it.
"""
