"""Encrypted files between a jeton-sim token and matrix-nio through the real gateway and Synapse:
the token's file is read byte-identical by nio (nio's own decrypt_attachment), nio's encrypted
upload is stored byte-identical by the token, and a ciphertext tampered with in Synapse's media
store is refused by the token with nothing stored."""

import asyncio
import pathlib
import random
import time

from e2e_stack import http_media, nio_sends_file, setup_room

FILE_SIZE = 100 * 1024


def stored_media_path(synapse, mxc):
    """Where Synapse keeps a local upload: local_content/AB/CD/rest of the media id."""
    media_id = mxc.rsplit("/", 1)[1]
    return pathlib.Path(synapse.media_store) / "local_content" / media_id[:2] / media_id[2:4] / media_id[4:]


def test_files_go_both_ways_between_a_token_and_nio_encrypted(synapse, gateway, tokens, tmp_path):
    asyncio.run(_files_both_ways(synapse, gateway, tokens, tmp_path))


async def _files_both_ways(synapse, gateway, tokens, tmp_path):
    from nio import RoomEncryptedFile
    from nio.crypto.attachments import decrypt_attachment

    nio = None
    try:
        alice, one, _two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path)
        files = []
        nio.client.add_event_callback(lambda r, e: files.append((r.room_id, e)), (RoomEncryptedFile,))

        # Token one -> nio: 100 KiB, read back and decrypted by nio.
        sent = random.Random(8).randbytes(FILE_SIZE)
        path = tmp_path / "report.bin"
        path.write_bytes(sent)
        started = time.monotonic()
        tok1.command(f"sendfile {room} {path}")
        await tok1.expect(f"file-uploaded 1 {FILE_SIZE} report.bin", timeout=120)
        print(f"\ntoken upload of {FILE_SIZE // 1024} KiB through the gateway on loopback: "
              f"{FILE_SIZE / 1024 / (time.monotonic() - started):.0f} KiB/s")
        assert tok1.find("file-progress send "), "progress of a transfer of 100 blocks"
        await tok1.expect("delivered 1 ")
        [event] = await nio.wait(lambda: [e for r, e in files if r == room and e.sender == one[0]],
                                 "the token's file event")
        assert event.body == "report.bin" and event.source["content"]["info"]["size"] == FILE_SIZE
        ciphertext = http_media(synapse, nio.client.access_token, event.url)
        assert ciphertext != sent, "Synapse holds ciphertext only"
        assert decrypt_attachment(ciphertext, event.key["k"], event.hashes["sha256"], event.iv) == sent
        # Token two is in the room too and stores the same file.
        await tok2.expect(f"file-received {room} {one[0]} {FILE_SIZE} application/octet-stream report.bin",
                          timeout=120)
        assert (tmp_path / "tok2" / "files" / "report.bin").read_bytes() == sent

        # nio -> token one: nio's own encryption, stored byte-identical.
        received = random.Random(9).randbytes(FILE_SIZE + 123)
        mark = tok1.mark()
        await nio_sends_file(nio, room, received, "from nio.pdf")
        started = time.monotonic()
        await tok1.expect(f"file-received {room} {alice[0]} {len(received)} application/pdf from nio.pdf",
                          since=mark, timeout=120)
        assert (tmp_path / "tok1" / "files" / "from nio.pdf").read_bytes() == received
        print(f"token download of {len(received) // 1024} KiB through the gateway on loopback (from the "
              f"event's send, its sync included): {len(received) / 1024 / (time.monotonic() - started):.0f} KiB/s")

        # A ciphertext changed in Synapse's media store after the upload: refused, nothing stored.
        def tamper(mxc):
            stored = stored_media_path(synapse, mxc)
            data = bytearray(stored.read_bytes())
            data[len(data) // 2] ^= 0x01
            stored.write_bytes(bytes(data))
        mark = tok1.mark()
        await nio_sends_file(nio, room, random.Random(10).randbytes(5000), "tampered.pdf", tamper_with=tamper)
        [line] = await tok1.expect("file-failed tampered.pdf ", since=mark, timeout=120)
        assert "does not match its SHA-256" in line, line
        assert not (tmp_path / "tok1" / "files" / "tampered.pdf").exists()
        assert list((tmp_path / "tok1" / "files" / ".partial").iterdir()) == []
    finally:
        if nio:
            await nio.close()
