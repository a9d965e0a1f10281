"""The only package that imports Keras: model builders, callbacks, optimizers, inputs, loading,
device and resume state. Modules import Keras inside functions where they can, so importing them
stays cheap."""
