"""The labeling job: sampled live queries -> judge grades (0-3) -> a fine-tuned cross-encoder, promoted only
when it is better. See labeling/cli.py for the commands and labeling/refresh.py for the one-shot job."""
