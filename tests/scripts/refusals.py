"""The device scripts' check of their refusals (they run as programs, beside this file)."""


def assert_refused(cases, errors=(ValueError,)) -> None:
    """Each ``(call, message)``: ``call()`` raises one of ``errors`` whose text holds ``message``."""
    for call, message in cases:
        try:
            call()
        except errors as err:
            assert message in str(err), (message, str(err))
        else:
            raise AssertionError(f"no error: {message}")
