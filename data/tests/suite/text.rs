use kiln_data::transform::tokenize;
use kiln_data::{
    DataError, Dataset, DatasetExt, HostTensor, TextCorpus, TextLines, TokenWindows, Tokenizer,
    Vocab,
};

use crate::common::{gzip, tmp, write};

#[test]
fn char_vocab_is_sorted_distinct_chars() {
    let v = Vocab::chars_of("hello, wörld!");
    let chars: String = v.chars().iter().collect();
    assert_eq!(chars, " !,dehlorwö");
    assert_eq!(v.len(), 11);
    assert_eq!(v.id_of(' '), Some(0));
    assert_eq!(v.id_of('ö'), Some(10));
    assert_eq!(v.id_of('z'), None);
    let ids = v.encode("hello wörld").unwrap();
    assert_eq!(v.decode(&ids).unwrap(), "hello wörld");
    assert_eq!(Vocab::from_chars("cba".chars()), Vocab::chars_of("abcabc"));

    let err = v.encode("hi").unwrap_err();
    assert!(matches!(err, DataError::Vocab(_)));
    assert!(err.to_string().contains("'i' at position 1"), "{err}");
    assert!(v.decode(&[11]).is_err());
}

#[test]
fn byte_vocab_covers_all_bytes() {
    let v = Vocab::bytes();
    assert_eq!(v.len(), 256);
    assert_eq!(v.tokenizer(), Tokenizer::Byte);
    let ids = v.encode("é!").unwrap();
    assert_eq!(ids, vec![0xC3, 0xA9, 0x21]);
    assert_eq!(v.decode(&ids).unwrap(), "é!");
    assert_eq!(v.decode_bytes(&[0xFF]).unwrap(), vec![0xFF]);
    assert!(v.decode(&[256]).is_err());
    assert_eq!(v.encode_bytes(&[0, 255]).unwrap(), vec![0, 255]);
}

#[test]
fn vocab_serializes() {
    for v in [Vocab::chars_of("abcé\n"), Vocab::bytes()] {
        let json = serde_json::to_string(&v).unwrap();
        let back: Vocab = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
    assert!(serde_json::from_str::<Vocab>(r#"{"kind":"char","chars":"ba"}"#).is_err());
}

#[test]
fn windows_shift_targets_by_one() {
    let corpus = TextCorpus::from_text("abcdefghij", Tokenizer::Char).unwrap();
    assert_eq!(corpus.len(), 10);
    let w = corpus.windows(3).unwrap();
    // Starts 0, 3, 6 (6..10 needs tokens 6..=9: ok).
    assert_eq!(w.len(), 3);
    let ex = w.get(2).unwrap();
    assert_eq!(ex.require("input").unwrap().as_slice::<i32>(), Some(&[6, 7, 8][..]));
    assert_eq!(ex.require("target").unwrap().as_slice::<i32>(), Some(&[7, 8, 9][..]));
    assert!(w.get(3).is_err());

    let w = corpus.windows(3).unwrap().with_stride(1).unwrap();
    assert_eq!(w.len(), 7);
    let ex = w.get(6).unwrap();
    assert_eq!(ex.require("target").unwrap().as_slice::<i32>(), Some(&[7, 8, 9][..]));
    assert!(corpus.windows(3).unwrap().with_stride(0).is_err());
    assert!(corpus.windows(0).is_err());
    assert_eq!(corpus.windows(10).unwrap().len(), 0);
    assert_eq!(corpus.windows(9).unwrap().len(), 1);
}

#[test]
fn split_is_by_position_and_windows_stay_inside() {
    let text: String = (0..100).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let corpus = TextCorpus::from_text(&text, Tokenizer::Byte).unwrap();
    assert_eq!(corpus.split_point(0.9).unwrap(), 90);
    let (train, val) = corpus.split_windows(4, 0.9).unwrap();
    assert_eq!(train.tokens(), &corpus.tokens()[..90]);
    assert_eq!(val.tokens(), &corpus.tokens()[90..]);
    assert_eq!(train.len(), (90 - 5) / 4 + 1);
    assert_eq!(val.len(), (10 - 5) / 4 + 1);
    let last = train.get(train.len() - 1).unwrap();
    let target = last.require("target").unwrap().as_slice::<i32>().unwrap().to_vec();
    let expected: Vec<i32> = corpus.tokens()[..90]
        .iter()
        .skip((train.len() - 1) * 4 + 1)
        .take(4)
        .map(|&t| t as i32)
        .collect();
    assert_eq!(target, expected);
    let first_val = val.get(0).unwrap();
    assert_eq!(
        first_val.require("input").unwrap().as_slice::<i32>().unwrap()[0],
        corpus.tokens()[90] as i32
    );
    assert!(corpus.split_windows(4, 1.5).is_err());
    assert!(TokenWindows::new(corpus.tokens().into(), 50..200, 4).is_err());
}

#[test]
fn corpora_open_files_by_char_or_byte() {
    let dir = tmp();
    let p = write(dir.path(), "t.txt.gz", gzip("to be or not".as_bytes()));
    let c = TextCorpus::open(&p, Tokenizer::Char).unwrap();
    assert_eq!(c.vocab().len(), 7);
    assert_eq!(c.vocab().decode(c.tokens()).unwrap(), "to be or not");
    let p = write(dir.path(), "bin.txt", [0xFFu8, 0x00, b'a']);
    assert!(matches!(
        TextCorpus::open(&p, Tokenizer::Char),
        Err(DataError::Corrupt { offset: 0, .. })
    ));
    let c = TextCorpus::open(&p, Tokenizer::Byte).unwrap();
    assert_eq!(c.tokens(), &[255, 0, 97]);
    assert!(TextCorpus::open(dir.path().join("none.txt"), Tokenizer::Byte).is_err());
    let vocab = Vocab::chars_of("ab");
    assert!(TextCorpus::with_vocab("abc", vocab).is_err());
}

#[test]
fn lines_tokenize_to_fixed_length() {
    let dir = tmp();
    let p = write(dir.path(), "lines.txt", "hi there\r\n\nok\n");
    let lines = TextLines::open(&p).unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines.get(0).unwrap().require("text").unwrap(),
        &HostTensor::vector(b"hi there".to_vec())
    );
    let vocab = Vocab::chars_of("hi thereok");
    let pad = vocab.len() as u32;
    let ds = lines.map(tokenize("text", "tokens", vocab.clone(), 4, pad));
    let ex = ds.get(0).unwrap();
    let ids = ex.require("tokens").unwrap().as_slice::<i32>().unwrap().to_vec();
    let decoded = vocab.decode(&ids.iter().map(|&i| i as u32).collect::<Vec<_>>()).unwrap();
    assert_eq!(decoded, "hi t");
    assert_eq!(ex.require("tokens_len").unwrap(), &HostTensor::scalar(4i32));
    let ex = ds.get(1).unwrap();
    let ids = ex.require("tokens").unwrap().as_slice::<i32>().unwrap().to_vec();
    assert_eq!(&ids[2..], &[pad as i32, pad as i32]);
    assert_eq!(ex.require("tokens_len").unwrap(), &HostTensor::scalar(2i32));
    // The raw text field is consumed, so examples batch cleanly.
    assert!(!ex.contains("text"));
}
