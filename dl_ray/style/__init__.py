"""Neural style transfer (``kind: style_transfer``, run by ``dl-ray train``): the pixels of one image are optimised.

* :mod:`dl_ray.style.costs` — the course's content cost, Gram matrix, style cost and J(G) = alpha J_content + beta J_style;
* :mod:`dl_ray.style.images` — content and style images from scikit-image's bundled images or any file;
* :mod:`dl_ray.style.spec` — the job file (typed, a docstring per field), checked before anything is written;
* :mod:`dl_ray.style.run` — the optimisation (Adam or L-BFGS over the pixels) and what it writes;
* :mod:`dl_ray.style.sweep` — what a Ray Tune sweep over its fields needs (one trial = one optimisation, a grid PNG).

No dataset, no epochs: the features come from VGG-19 (:mod:`dl_ray.models.style_features`).
"""
