"""keras_compact: compact convolutional networks for Keras 3."""

import setuptools

setuptools.setup(
    name="keras_compact",
    version="0.1.0",
    description=(
        "ExpandNets, X-Nets, SlimConv, cheap convolutions with online "
        "distillation and APS channel search for Keras 3 / TensorFlow."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["keras_compact*", "trainers*", "configs*", "tools*"]
    ),
    install_requires=[
        "tensorflow-cpu>=2.21,<2.22; platform_machine=='x86_64'",
        "tensorflow>=2.21,<2.22; platform_machine!='x86_64'",
        "keras>=3.15,<3.16",
        "numpy",
        "absl-py",
        "ml-collections",
        "tensorboard",
        "ai-edge-litert",
        "matplotlib",
    ],
    extras_require={
        # The tests check the PyTorch twins of tools/torch_models.py too.
        "test": ["pytest", "torch==2.13.0"],
        "bench": ["torch==2.13.0"],
    },
)
