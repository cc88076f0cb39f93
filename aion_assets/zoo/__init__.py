"""Galaxy Zoo supervised pretraining: a data-scaling study on volunteer labels, in-domain transfer to other
surveys, and a galaxy-pretrained EfficientNet-Lite0 for the search (Walmsley et al. 2024, arXiv:2404.02973)."""
