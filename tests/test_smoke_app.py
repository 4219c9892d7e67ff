def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_users_list_scoped(client, tenant, other_tenant):
    response = client.get("/api/v1/users", headers=tenant.headers)
    assert response.status_code == 200
    emails = [u["email"] for u in response.get_json()["items"]]
    assert emails == [tenant.admin_email]
