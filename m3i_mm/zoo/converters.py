"""Checkpoint converters by name.

A zoo entry whose file is not laid out the way our models expect (e.g. the official
InternImage checkpoints keep their weights under ``'model'``) names a converter in its
metafile (``Converter: internimage``). The converter receives the object
``torch.load`` returned and gives back the dict mmengine's ``load_checkpoint`` and
``Pretrained`` initialiser read: ``{'state_dict': {...}, ...}``.

Converters register themselves at import::

    @register_converter('internimage')
    def convert_internimage(checkpoint: dict) -> dict:
        ...
"""
from typing import Any, Callable, Dict, List

from .errors import ConverterError

Converter = Callable[[Any], dict]

_CONVERTERS: Dict[str, Converter] = {}


def register_converter(name: str, force: bool = False) -> Callable[[Converter], Converter]:
    """Decorator registering a checkpoint converter under ``name``.

    Args:
        name: The name metafiles use in their ``Converter`` field.
        force: Replace a converter already registered under ``name`` instead of failing.

    Returns:
        The decorator, which returns the converter unchanged.

    Raises:
        ConverterError: If ``name`` is taken by another converter and ``force`` is False.
    """
    if not isinstance(name, str) or not name:
        raise ConverterError(f'converter name must be a non-empty string, got {name!r}')

    def decorator(converter: Converter) -> Converter:
        if not callable(converter):
            raise ConverterError(f'converter {name!r} must be callable, got {converter!r}')
        existing = _CONVERTERS.get(name)
        if existing is not None and existing is not converter and not force:
            raise ConverterError(
                f'checkpoint converter {name!r} is already registered '
                f'({existing.__module__}.{existing.__qualname__}); pass force=True to replace it')
        _CONVERTERS[name] = converter
        return converter

    return decorator


def get_converter(name: str) -> Converter:
    """Return the converter registered under ``name``.

    Raises:
        ConverterError: If no converter has that name (the message lists the known ones).
    """
    try:
        return _CONVERTERS[name]
    except KeyError:
        raise ConverterError(
            f'no checkpoint converter named {name!r}; registered converters: '
            f'{list_converters() or "none"}') from None


def list_converters() -> List[str]:
    """Names of all registered converters, sorted."""
    return sorted(_CONVERTERS)


def apply_converter(name: str, checkpoint: Any) -> dict:
    """Run converter ``name`` on a loaded checkpoint and check what it returns.

    Args:
        name: A registered converter name.
        checkpoint: The object ``torch.load`` returned.

    Returns:
        The converted checkpoint, a dict holding a ``'state_dict'`` dict.

    Raises:
        ConverterError: If the converter is unknown or returns no ``'state_dict'`` dict.
    """
    converted = get_converter(name)(checkpoint)
    if not isinstance(converted, dict) or not isinstance(converted.get('state_dict'), dict):
        raise ConverterError(
            f'checkpoint converter {name!r} must return a dict with a "state_dict" dict, got '
            f'{type(converted).__name__}'
            + (f' with keys {sorted(converted)[:10]}' if isinstance(converted, dict) else ''))
    return converted
