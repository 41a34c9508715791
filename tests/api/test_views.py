"""Secret masking in views, and its inverse on update."""

from api.views import MASK, mask_secrets, unmask


def test_mask_hides_credentials_but_keeps_references() -> None:
    info = {"host": "vc", "password": "pw", "nested": {"api_key": "k", "port": 443},
            "secret_ref": "http://barbican/v1/secrets/x", "allow_untrusted": True}
    masked = mask_secrets(info)
    assert masked == {"host": "vc", "password": MASK, "nested": {"api_key": MASK, "port": 443},
                      "secret_ref": "http://barbican/v1/secrets/x", "allow_untrusted": True}


def test_unmask_restores_untouched_values() -> None:
    old = {"host": "a", "password": "pw", "nested": {"token": "t"}}
    new = {"host": "b", "password": MASK, "nested": {"token": MASK}}
    assert unmask(new, old) == {"host": "b", "password": "pw", "nested": {"token": "t"}}
    assert unmask({"password": "new"}, old) == {"password": "new"}


def test_mask_covers_pwd_auth_and_stored_references_at_any_depth() -> None:
    env = {"pwd": "p", "auth": "a", "x": [{"deep": {"adminPassword": "q", "sealed": {"$sterna_secret": "m/1"}}}],
           "auth_url": "http://keystone", "region": "r"}
    assert mask_secrets(env) == {"pwd": MASK, "auth": MASK, "x": [{"deep": {"adminPassword": MASK, "sealed": MASK}}],
                                 "auth_url": "http://keystone", "region": "r"}
