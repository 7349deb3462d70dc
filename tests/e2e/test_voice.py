"""Voice messages between a jeton-sim token and matrix-nio through the real gateway and Synapse.

The token records espeak-ng speech (`sendvoice`) and sends it as Element does (MSC3245): nio
downloads and decrypts the Ogg Opus, the event carries every field, and opus-tools finds the
stream valid and as long as the speech. nio sends a voice message made by opusenc: the token
shows it as one, and `play` writes a WAV as long as the input."""

import asyncio
import re
import subprocess
import wave

from e2e_stack import UdpRelay, http_media, setup_room

SPEECH = "This voice message was recorded on a jeton token and sent end to end encrypted."
# The duration opus-tools and the WAV must agree with the input within (the bound).
DURATION_TOLERANCE_MS = 40


def run(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def speech_wav(path, rate=16000):
    """SPEECH spoken by espeak-ng, as `rate` Hz mono 16-bit PCM WAV (sox, no dither)."""
    spoken = path.with_suffix(".espeak.wav")
    run("espeak-ng", "-v", "en-us", "-w", str(spoken), SPEECH)
    run("sox", str(spoken), "-D", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed", str(path))
    return path


def wav_ms(path):
    with wave.open(str(path)) as w:
        return w.getnframes() * 1000 // w.getframerate()


def opusinfo_ms(path):
    """The playback length opusinfo reports; it must report no warning or error."""
    info = run("opusinfo", str(path))
    assert "WARNING" not in info and "ERROR" not in info, info
    m = re.search(r"Playback length: (\d+)m:(\d+(?:\.\d+)?)s", info)
    assert m, info
    return round((int(m.group(1)) * 60 + float(m.group(2))) * 1000)


def test_voice_messages_go_both_ways_between_a_token_and_nio(synapse, gateway, tokens, tmp_path):
    asyncio.run(_voice_both_ways(synapse, gateway, tokens, tmp_path))


async def _voice_both_ways(synapse, gateway, tokens, tmp_path):
    from nio import RoomEncryptedAudio, RoomSendResponse, UploadResponse
    from nio.crypto.attachments import decrypt_attachment

    relay = UdpRelay(gateway.address)
    nio = None
    try:
        alice, one, _two, tok1, tok2, nio, room = await setup_room(synapse, gateway, tokens, tmp_path, relay)
        audio = []
        nio.client.add_event_callback(lambda r, e: audio.append((r.room_id, e)), (RoomEncryptedAudio,))

        # A format the recorder does not take: refused in words, nothing sent.
        cd = tmp_path / "cd.wav"
        speech_wav(cd, rate=44100)
        mark = tok1.mark()
        tok1.command(f"sendvoice {room} {cd}")
        [line] = await tok1.expect("error ", since=mark)
        assert "is 44100 Hz, 1 channel(s), 16-bit integer: sendvoice takes 16 kHz mono 16-bit PCM" in line, line

        # Token one -> nio: espeak-ng speech recorded on the token.
        wav = speech_wav(tmp_path / "speech.wav")
        input_ms = wav_ms(wav)
        # A text first, so that the figure below is the voice message's alone (the room key
        # reached the other devices with the text).
        tok1.command(f"send {room} a voice message follows")
        await tok1.expect("delivered 1 ")
        await nio.wait_for_text(room, one[0], "a voice message follows")
        up0, down0, dgu0, dgd0 = relay.counters()
        tok1.command(f"sendvoice {room} {wav}")
        [uploaded] = await tok1.expect("file-uploaded ", timeout=120)
        ogg_size = int(uploaded.split()[2])
        await tok1.expect("delivered 2 ")
        [event] = await nio.wait(lambda: [e for r, e in audio if r == room and e.sender == one[0]],
                                 "the token's voice message")
        up1, down1, dgu1, dgd1 = relay.counters()
        content = event.source["content"]
        duration = content["info"]["duration"]
        assert abs(duration - input_ms) <= DURATION_TOLERANCE_MS, (duration, input_ms)
        assert content["msgtype"] == "m.audio"
        assert content["body"] == "Voice message"
        assert content["org.matrix.msc1767.text"] == "Voice message"
        assert content["info"] == {"mimetype": "audio/ogg", "size": ogg_size, "duration": duration}
        assert content["org.matrix.msc1767.audio"]["duration"] == duration
        waveform = content["org.matrix.msc1767.audio"]["waveform"]
        assert 30 <= len(waveform) <= 120 and all(isinstance(v, int) and 0 <= v <= 1024 for v in waveform)
        assert max(waveform) > 0, waveform
        assert content["org.matrix.msc3245.voice"] == {}
        assert content["file"]["v"] == "v2" and "url" not in content
        ciphertext = http_media(synapse, nio.client.access_token, event.url)
        ogg = decrypt_attachment(ciphertext, event.key["k"], event.hashes["sha256"], event.iv)
        assert len(ogg) == ogg_size and ogg.startswith(b"OggS") and ciphertext != ogg
        received = tmp_path / "from-token.opus"
        received.write_bytes(ogg)
        assert abs(opusinfo_ms(received) - input_ms) <= DURATION_TOLERANCE_MS
        decoded = tmp_path / "from-token.wav"
        run("opusdec", "--rate", "16000", str(received), str(decoded))
        assert abs(wav_ms(decoded) - input_ms) <= DURATION_TOLERANCE_MS
        print(f"\nvoice message of {input_ms} ms: Ogg Opus {ogg_size} B; on the air from sendvoice to "
              f"delivered (upload, event, background syncs): up {up1 - up0} B in {dgu1 - dgu0} datagrams, "
              f"down {down1 - down0} B in {dgd1 - dgd0} datagrams; "
              f"{(up1 - up0 + down1 - down0) * 1000 // input_ms} B per second of voice")
        # Token two shows it as a voice message.
        await tok2.expect(f"voice {room} {one[0]} {duration} Voice message", timeout=120)

        # nio -> token one: Ogg Opus made by opusenc, Element's content.
        element_ogg = tmp_path / "element.ogg"
        run("opusenc", "--quiet", "--bitrate", "24", "--framesize", "20", str(wav), str(element_ogg))
        data = element_ogg.read_bytes()
        print(f"the same speech at Element's bitrate (opusenc, 24 kbit/s, 20 ms frames): Ogg Opus {len(data)} B, "
              f"{len(data) * 1000 // input_ms} B per second before HTTP")
        upload, keys = await nio.client.upload(lambda *_: data, content_type="audio/ogg",
                                               filename="Voice message.ogg", encrypt=True, filesize=len(data))
        assert isinstance(upload, UploadResponse), upload
        file = {"url": upload.content_uri, **keys}
        nio_content = {
            "msgtype": "m.audio", "body": "Voice message", "file": file,
            "info": {"mimetype": "audio/ogg", "size": len(data), "duration": input_ms},
            "org.matrix.msc1767.text": "Voice message",
            "org.matrix.msc1767.file": {"file": file, "name": "Voice message.ogg",
                                        "mimetype": "audio/ogg", "size": len(data)},
            "org.matrix.msc1767.audio": {"duration": input_ms, "waveform": [min(1024, 10 * i) for i in range(100)]},
            "org.matrix.msc3245.voice": {},
        }
        mark = tok1.mark()
        sent = await nio.client.room_send(room, "m.room.message", nio_content, ignore_unverified_devices=True)
        assert isinstance(sent, RoomSendResponse), sent
        await tok1.expect(f"file-received {room} {alice[0]} {len(data)} audio/ogg Voice message",
                          since=mark, timeout=120)
        await tok1.expect(f"voice {room} {alice[0]} {input_ms} Voice message", since=mark)
        [saved] = await tok1.expect("file-saved ", since=mark)
        path = saved.removeprefix("file-saved ")
        assert open(path, "rb").read() == data
        mark = tok1.mark()
        tok1.command(f"play {path}")
        [played] = await tok1.expect("played ", since=mark)
        wav_path, played_ms = played.removeprefix("played ").rsplit(" ", 1)
        assert abs(int(played_ms) - input_ms) <= DURATION_TOLERANCE_MS, (played_ms, input_ms)
        assert abs(wav_ms(wav_path) - input_ms) <= DURATION_TOLERANCE_MS
    finally:
        if nio:
            await nio.close()
