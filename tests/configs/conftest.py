import pytest


@pytest.fixture(scope='session', autouse=True)
def memoise_external_config_lookup():
    """Speed only: for every ``mmdet::``/``mmseg::``/``mmpretrain::`` base, mmengine parses
    all ~400 metafiles of that package (a quarter of a second) before it falls back to the
    file path; within one run the answer never changes, so it is computed once per name."""
    import mmengine.config.config as config_module
    lookup = config_module._get_external_cfg_path
    answers = {}

    def memoised(package_path: str, cfg_file: str) -> str:
        key = (package_path, cfg_file)
        if key not in answers:
            try:
                answers[key] = (lookup(package_path, cfg_file), None)
            except ValueError as error:  # not a metafile entry: mmengine then tries the path
                answers[key] = (None, error)
        path, error = answers[key]
        if error is not None:
            raise error
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config_module, '_get_external_cfg_path', memoised)
        yield
