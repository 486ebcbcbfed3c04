"""The architectures, one module each: a ModelConfig subclass with the architecture's
parameters, whose lay_out() appends its layers to a TableBuilder.

The ImageNet classifiers follow torchvision's definitions layer for layer (shapes, strides,
paddings, groups, the order of execution), with each BatchNorm folded into the convolution
before it; their layer ids follow torchvision's module names where those are readable.
"""
