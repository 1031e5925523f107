"""pianolab: piano-music generation with deep stacks of dilated 1D convolutions, the companion
package of the pianolab book. Its modules are the pipeline's stages, in the order data flows:
``encoding`` -> ``corpus`` -> ``data`` -> ``model`` -> ``config`` -> ``runs`` -> ``train`` ->
``generate`` -> ``audio`` / ``metrics``; ``cli`` drives long runs. Each name is imported from the
module that defines it. Keras and TensorFlow are imported only when needed.
"""

__version__ = "0.1.0"
