"""User-style model factories for the tests: `--model tests.factories.resnet:resnet8` and planted bad ones."""
