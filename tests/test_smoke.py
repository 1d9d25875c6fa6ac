def test_enroll_and_scan(client, make_program, enroll):
    kit = make_program()
    member = enroll(kit)
    response = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers)
    assert response.status_code == 200
    assert response.json["points"] == 50
