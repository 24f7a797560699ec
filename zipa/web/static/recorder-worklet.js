// Microphone capture for the page (an AudioWorklet): each block of the first input channel is
// posted to the page, which writes the blocks out as a WAV file when recording stops. Browsers'
// own recorder (MediaRecorder) makes webm, which soundfile on the server cannot read.
class ZipaRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("zipa-recorder", ZipaRecorder);
